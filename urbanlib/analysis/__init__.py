"""The papers' analyses on plain arrays and DataFrames.

Latent clusters (:mod:`.clusters`, UrbanLN Fig. 6), cross-city similarity (:mod:`.similarity`,
UrbanCLIP Fig. 6), transfer heatmaps (:mod:`.transfer`, UrbanCLIP Fig. 5, UrbanLN Fig. 5),
efficiency (:mod:`.efficiency`, UrbanLN Fig. 4) and the claims verdict table (:mod:`.verdicts`).
Every function takes features, labels, indicators or results tables, never a trained model, so
notebooks wire cached encoders into them and tests feed them synthetic inputs.
"""
