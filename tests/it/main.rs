//! Integration tests against real redis-server and redis-sentinel processes.
