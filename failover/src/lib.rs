//! Failover engine: events and a snapshot in, commands out. Built in the failover issue.
