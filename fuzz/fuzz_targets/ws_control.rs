//! `decode_client` / `decode_server` on arbitrary UTF-8; every message they
//! accept survives a JSON round trip. The body is `agentos_fuzz::ws_control`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agentos_fuzz::ws_control(data));
