//! `kctl`: Berth's command line, one module per verb under `commands/`.
//! Empty until issue "The API server and kctl".
#![forbid(unsafe_code)]
