"""Every size and time limit on what HeadCraft reads from a peer or a file, stated once.

The wire codec, the server and the file loaders import these; the Blender extension gets a
generated copy beside its copy of wire.py (`python build.py sync`), so both sides share them.
docs/PROTOCOL.md ("Limits") lists them for users. Stdlib only: the extension imports this too.
"""

# -- the wire protocol ---------------------------------------------------------------------
MAX_HEADER_BYTES = 1 << 20             # a frame's JSON header
MAX_HEADER_DEPTH = 32                  # nesting of JSON arrays/objects in a header
MAX_ARRAY_RANK = 8                     # dimensions of one array
MAX_ARRAY_NAME_CHARS = 256             # characters of an array's name
MAX_ARRAY_ELEMENTS = 1 << 31           # elements of one array
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30    # a frame's payload (the server's --max-frame-mb default)
RECV_CHUNK_BYTES = 1 << 22             # payloads are read and stored in steps of this, as they arrive

# -- the server ----------------------------------------------------------------------------
HANDSHAKE_SECONDS = 10.0               # from connecting to a complete 'hello', all reads together
MAX_CONNECTIONS = 16                   # open connections; one more gets an error frame and is closed
MAX_QUEUED_JOBS = 64                   # jobs waiting or running; one more is refused
MAX_CACHE_ENTRIES = 24                 # models, generators and layout operators kept in memory
MAX_CACHE_BYTES = 4 << 30              # and their bytes together (least recently used go first)
MAX_CACHED_PER_KIND = 3                # of them, layout operators of one kind (a 2048^2 set is ~1 GB)

# -- files -----------------------------------------------------------------------------------
MIN_MAP_SIZE, MAX_MAP_SIZE = 64, 8192  # texels per side of a displacement map (read or made)
MAX_SCAN_VERTICES = 20_000_000         # a scan file or array, before any clean-up or decimation
MAX_SCAN_FACES = 20_000_000
MAX_FACES_PER_VERTEX = 8               # a surface has about 2; more is not a scan
MAX_FIT_VERTICES = 5_000_000           # what a fit works on: larger scans are decimated to it
MAX_LAYOUT_FILE_BYTES = 256 << 20     # an imported layout (.obj or .npy); FLAME's OBJ is ~1 MB
MAX_PICKLE_ELEMENTS = 100_000_000      # elements of one array a FLAME pickle may build
MAX_CONFIG_BYTES = 1 << 20             # a generator's .json config
GENERATOR_CONFIG_MAX = {"z_dim": 1 << 14, "w_dim": 1 << 14, "w_num_layers": 64,   # its "config" keys
                        "img_resolution": MAX_MAP_SIZE, "img_channels": 64, "channel_base": 1 << 24,
                        "channel_max": 1 << 14}
MAX_GENERATOR_ELEMENTS = 250_000_000   # parameters and buffers of a generator (a PCA: its arrays)

# -- Blender -------------------------------------------------------------------------------
MAX_PERFORMANCE_FRAMES = 1_000_000     # frames of an imported performance, read or resampled
MAX_PERFORMANCE_CHANNELS = 1024        # values per frame in one of its arrays
