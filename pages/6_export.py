import streamlit as st
st.title("6_export")
st.info("coming")
