//! etcd leader election with a kept-alive lease; leadership fences every state write.
