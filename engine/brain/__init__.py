"""Brain MR measures from a tissue label volume: volumetrics (tissue volumes, intracranial
volume, parenchymal fraction, hemispheric asymmetry) and the normative comparison (z-scores
by age and sex from published sources, an atrophy grade). Pure: arrays in, dicts out."""
