"""One Streamlit page per file, run by st.navigation in ui/app.py."""
