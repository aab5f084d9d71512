//! The engine. (STUB: being written.)

/// Engine.
#[derive(Debug)]
pub struct Engine;
/// Request.
#[derive(Debug)]
pub struct Request;
/// Decision.
#[derive(Debug)]
pub struct Decision;
/// Identity.
#[derive(Debug)]
pub struct Identity;
/// Stats.
#[derive(Debug)]
pub struct EngineStats;
