//! Synthetic clusters, jobs and policies in the real input formats (`twinsite generate`).
