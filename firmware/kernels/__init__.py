"""The C runtime of the generated code, installed as the package codegen.kernels (pyproject.toml)."""
