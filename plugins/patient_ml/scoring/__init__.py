"""Batch scoring's write-back: a deployed model's predictions become non-final FHIR resources
in the dataset's source (`observations`: the resources, one Observation per model and image,
`preliminary`, `derivedFrom` the image and never `focus`, so no curation takes one for a label;
`sinks`: one transaction Bundle of PUTs per chunk on a FHIR server, or appended NDJSON), so a
clinician's system finds them by identifier, code or image and a rerun updates them instead of
adding duplicates.
"""
