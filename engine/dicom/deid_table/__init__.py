"""DICOM PS3.15 Table E.1-1 as data (`table_e1_1.json`) and the script that generates it."""
