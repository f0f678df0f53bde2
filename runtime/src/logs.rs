//! Container logs in the CRI format.
