"""Data: readers, preprocessing, patient-level splits, the phantom and the manifest."""
