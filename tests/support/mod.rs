//! Shared helpers of the root package's integration tests. Each test binary uses a part.
#![allow(dead_code)]

pub mod chromium;
pub mod controller;
pub mod etcd;
pub mod fixtures;
pub mod flink;
pub mod kube_api;
pub mod kube_schema;
pub mod prometheus;
pub mod proxy;
