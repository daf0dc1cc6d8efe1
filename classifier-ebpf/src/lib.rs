#![no_std]
//! The meshclass TC classifier. The program itself is the `classifier` binary (src/main.rs).
