"""Stage two: heads and baselines trained on cached vectors, their scores and reports."""
