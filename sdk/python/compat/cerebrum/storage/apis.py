from aios_client import (mount, create_file, create_dir, write_file, retrieve_file,  # noqa: F401
                         rollback_file, share_file)
