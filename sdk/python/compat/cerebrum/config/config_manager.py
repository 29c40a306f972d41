from aios_client import kernel_url


class _Config:
    def get_kernel_url(self):
        return kernel_url()


config = _Config()
