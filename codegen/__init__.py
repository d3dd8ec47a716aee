"""The .tflite -> C compiler. Never imports TensorFlow: it runs where only the model file is."""
