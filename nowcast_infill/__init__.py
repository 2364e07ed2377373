"""nowcast_infill: radar precipitation infilling and nowcasting with PyTorch Lightning."""

__version__ = "0.1.0"
