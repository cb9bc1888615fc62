//! The TOML config loader (bus-config `Config::from_toml_str`): any text
//! is a config or an error, never a panic; a config it accepts validates
//! again and converts into every setting the node builds from it.
#![no_main]

use bus_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml_str(text) else {
        return;
    };
    config
        .validate()
        .expect("an accepted config validates again");
    let _ = config.bus_config(0);
    let _ = config.bus_config(u16::MAX);
    let _ = config.tcp_listener_config();
    let _ = config.tcp_connector_config();
    let _ = config.replicas_config();
});
