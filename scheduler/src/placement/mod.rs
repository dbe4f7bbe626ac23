//! Gang placement of jobs into sites and onto nodes: a fast heuristic, and a MILP that
//! improves it under a time budget.
