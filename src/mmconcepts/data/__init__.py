"""Datasets: the ShapesWorld generator and readers for captioned-image layouts."""

from mmconcepts.data.readers import Dataset, ImageLoadError, Sample, load_image, open_dataset

__all__ = ["Dataset", "ImageLoadError", "Sample", "load_image", "open_dataset"]
