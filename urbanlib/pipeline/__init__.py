"""Primitives and recipes: region tensors, pairs, texts, cached runs, features, the City, learning rates, and the UrbanCLIP / UrbanLN pretraining recipes."""
