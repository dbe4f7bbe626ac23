//! The formats users hand us (kubectl JSON, StreamJob YAML, policy YAML, Flink plans), parsed
//! from text into the model with errors that name the source, the object and the field.
