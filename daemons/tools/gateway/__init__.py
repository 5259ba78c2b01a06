"""The Broker Gateway for assistants: ``ofi mcp`` (an MCP server over the bus of a home) and the
operator's proposals workflow (``ofi proposals``, ``ofi approve``, ``ofi reject``).

``proposals`` holds the pure logic; ``store`` the bus I/O both sides share; ``server`` the MCP
server (the only module that imports the ``mcp`` SDK).
"""
