"""One module per Consul object: the only place its fields, validation and API encoding live."""
