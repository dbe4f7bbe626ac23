//! Durable controller state: one interface, an etcd and an embedded implementation.
