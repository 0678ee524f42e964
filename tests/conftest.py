"""Suite-wide test settings."""

from hypothesis import HealthCheck, settings

# Property tests run beside real servers on a shared 2-core machine: a stall there is not a
# failure of the property under test, so no per-example deadline and no too-slow health check.
settings.register_profile("grpcmesh", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("grpcmesh")
