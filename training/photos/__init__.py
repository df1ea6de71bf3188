"""Real photos with 68 landmarks and no fit: stage 3's extra photos (UTKFace, the paper's CelebA role).

    python -m training.photos --photos ../shared/data/utkface-aligned-200 --out data/utkface-landmarks.npz --limit 3000

Landmarks come from dlib (its HOG detector, then its 68-point predictor): DESIGN.md allows dlib
where faces are near-frontal, and UTKFace's aligned crops are. Photos where dlib finds no face, or
finds one too small, are left out.
"""

from .landmarked import CropJitter, LandmarkedPhotos, PhotoBatch, crop_around_landmarks, crop_batch, detect_landmarks

__all__ = ["CropJitter", "LandmarkedPhotos", "PhotoBatch", "crop_around_landmarks", "crop_batch", "detect_landmarks"]
