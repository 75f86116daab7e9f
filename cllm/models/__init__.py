"""The models folder: the registry of named models, its rules, its locks and the names of each
model's side files."""
