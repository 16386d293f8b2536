//! Media: the ring sound (camera and codecs follow).

pub mod ring;
