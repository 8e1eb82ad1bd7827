"""Using a trained model: every command that reads a run or an exported model. TensorFlow inside the functions.

    classifier.py   any artifact (best.keras, .keras, SavedModel, .tflite) behind one batched call
    predict.py      image files in, labelled predictions out: the one batched prediction path
    metrics.py      accuracy, per-class precision / recall / F1, top-k, confusion matrix (NumPy)
    evaluate.py     `imgcls evaluate`: a run's best.keras on its split (or a folder), eval.json and plots
    export.py       `imgcls export`: SavedModel, TFLite, .keras, checked against best.keras before it is kept
"""
