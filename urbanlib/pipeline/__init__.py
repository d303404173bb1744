"""Glue between datasets, models and the notebooks: tensors, pretraining runs, embeddings."""
