//! The site interface (nodes, pods, job launches, health, checkpoints) and its kinds.
