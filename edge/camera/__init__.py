"""The camera side: opening a source (device, file, stream), reading frames, decoding photographs."""
