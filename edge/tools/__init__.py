"""Tools beside the daemon: evaluation on labelled data, data-set readers, metrics, the watch command."""
