//! See benches/ and the scripts in this folder.
