//! Storage access, checkpoint discovery and replication between the two sites.
