// Router tests over the memory store, without sockets: filled in below.
