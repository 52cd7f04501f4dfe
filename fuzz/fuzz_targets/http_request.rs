#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_tunnel_fuzz::http_request(data));
