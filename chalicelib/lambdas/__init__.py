"""Layer 1: the AWS Lambda entry points (one image, ImageConfig.Command picks one)."""
