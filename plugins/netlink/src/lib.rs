//! Blocking rtnetlink client (work in progress).
