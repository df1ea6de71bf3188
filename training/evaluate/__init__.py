"""Evaluation: the paper's measurements on real photos and held-out synthetic faces."""
