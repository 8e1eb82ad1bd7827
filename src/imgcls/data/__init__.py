"""The data: from a folder of photos to the batches a model trains on. No TensorFlow unless noted.

    scan.py       every file checked once by content (Pillow), bad files named, odd formats converted, cached
    folders.py    a folder of class folders: its classes, and its scan
    plan.py       the run's subsets: seeded stratified split, duplicates across subsets, class weights, cache choice
    report.py     what the data looks like (printed before training, `imgcls inspect`), the sample grid (TF)
    pipeline.py   (TF) load_image, THE preprocessing, and the tf.data pipelines
    augment.py    (TF) the augmentation presets, a tf.data map over training batches
"""
