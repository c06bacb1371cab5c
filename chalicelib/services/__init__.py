"""Layer 2: one module or package per protocol: parse -> domain -> render."""
