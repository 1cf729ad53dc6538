"""Labels written by people: the reference run-length format of segmentation masks, masks as
PNG images, and the FHIR label records they become (see `patient_ml.fhir.mapping`)."""
