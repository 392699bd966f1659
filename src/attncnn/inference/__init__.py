"""Using a trained model: the weights file and what reads it. `weights` writes and reads
the one file a run leaves for use (safetensors tensors plus the metadata that rebuilds the
model: name, arguments, classes, normalisation, input size); `predict` classifies image
files with it, `evaluation` scores it on a data split (top-1/top-5, per class, confusion
matrix: what `attncnn eval` prints) and `export` turns it into ONNX or TorchScript checked
against PyTorch. Nothing here trains: the engine writes the weights file through
`weights.save_weights`, and everything after training starts from that file.
"""
