//! # edge-sensors
//!
//! Sensor drivers the device agent feeds models from, written against `embedded-hal` 1.0 so the
//! same code runs on a Linux I²C bus (`/dev/i2c-N` through `linux-embedded-hal`, feature `linux`),
//! on a microcontroller HAL, on a mock bus in tests, and on an emulated chip in demos.
//!
//! | module | owns |
//! |---|---|
//! | [`mpu6050`] | the InvenSense MPU-6050 (and register-compatible MPU-6500/9250) 6-axis IMU |
//! | [`sim`] | an emulated MPU-6050 on an in-process I²C bus: a healthy or worn machine, or a faulty chip |
//!
//! ```
//! use edge_sensors::mpu6050::{Mpu6050, Settings};
//! use edge_sensors::sim::{Machine, SimulatedMpu6050};
//!
//! let bus = SimulatedMpu6050::new(0x68, Machine::Healthy, 7);
//! let mut imu = Mpu6050::new(bus, 0x68);
//! imu.init(&Settings::default()).unwrap();
//! let reading = imu.read().unwrap();
//! assert!((reading.accel_g[2] - 1.0).abs() < 0.5); // gravity on z
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod mpu6050;
pub mod sim;
