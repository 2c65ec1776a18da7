"""Subject folder format, validating loader and the synthetic light stage."""
