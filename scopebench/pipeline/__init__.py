"""From images to cached arrays: the Shifted Context Crop, extraction, the activation store and its seals."""
