"""Deployment: export a trained model to TorchScript, torch.export (pt2) and TVM artifacts."""
