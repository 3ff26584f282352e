"""Semantic segmentation: data conventions, the brain-tissue generator, training, evaluation."""
