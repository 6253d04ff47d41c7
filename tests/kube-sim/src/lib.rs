//! kube-sim: a faithful, in-memory Kubernetes API-server emulator for tests (dev-only).
